#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bootkmod developers
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: bootkmod_dud
short_description: Build an Anaconda Driver Update Disk from prebuilt kernel modules
description:
  - Runs C(bootkmod dud build --json) to make a Driver Update Disk (an ISO9660 image
    labelled OEMDRV, or the bare kmod RPM) for an installer kernel, for PXE and kickstart
    pipelines. Usually run on the controller (C(delegate_to=localhost), C(run_once=true)).
  - The disk is built in a temporary file with C(SOURCE_DATE_EPOCH) set (by default the
    newest modification time of the inputs), so an unchanged input gives identical bytes;
    I(dest) is replaced, atomically, only when its bytes differ, and the task is
    C(changed) only then.
version_added: "0.1.0"
author:
  - bootkmod developers (@bootkmod)
options:
  src:
    description:
      - Module files (C(.ko), C(.ko.xz), C(.ko.zst), C(.ko.gz)); builds of one driver for
        several kernels give one RPM each on the disk.
    type: list
    elements: path
    required: true
  dest:
    description:
      - The disk (or, with I(format=rpm), the RPM file) to write.
    type: path
    required: true
  format:
    description:
      - C(iso) for a disk the installer finds by its OEMDRV label, C(rpm) for the package
        alone (one build only).
    type: str
    choices: [iso, rpm]
    default: iso
  name:
    description:
      - Package name after C(kmod-); by default the first module's name.
    type: str
  version:
    description:
      - Package version; by default the module's C(version=), which some modules lack.
    type: str
  release:
    description:
      - Package release.
    type: str
    default: "1"
  firmware:
    description:
      - Firmware files to ship under C(/lib/firmware).
    type: list
    elements: path
    default: []
  kabi_requires:
    description:
      - Make the package require the kernel symbols the modules use (C(--kabi-requires)).
    type: bool
    default: false
  check_root:
    description:
      - Refuse the build unless the modules load on a kernel of this tree (C(--check-root)),
        e.g. the installer's unpacked kernel.
    type: path
  check_kernel:
    description:
      - The kernel release under I(check_root) to check against (C(--check-kver)).
    type: str
  source_date_epoch:
    description:
      - Timestamp (seconds) written into the disk; by default the newest modification time
        of I(src) and I(firmware).
    type: int
extends_documentation_fragment:
  - bootkmod.storage.bootkmod.executable
attributes:
  check_mode:
    description: Builds in a temporary file and compares, but does not write I(dest).
    support: full
  diff_mode:
    description: Not supported; the report says what the disk holds.
    support: none
'''

EXAMPLES = r'''
- name: A driver disk for the installer kernel, on the controller
  bootkmod.storage.bootkmod_dud:
    src:
      - files/mpt3sas.ko
    dest: /srv/pxe/dd/mpt3sas.iso
    version: "45.00.00.00"
    check_root: /srv/pxe/installer-root
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
dest:
  description: The file written (or that would be written).
  returned: always
  type: str
sha256:
  description: sha256 of the disk built.
  returned: success
  type: str
report:
  description: bootkmod's JSON report of the build (packages, files, warnings).
  returned: success
  type: dict
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bootkmod.storage.plugins.module_utils.bootkmod import run_json


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='list', elements='path', required=True),
            dest=dict(type='path', required=True),
            format=dict(type='str', default='iso', choices=['iso', 'rpm']),
            name=dict(type='str'),
            version=dict(type='str'),
            release=dict(type='str', default='1'),
            firmware=dict(type='list', elements='path', default=[]),
            kabi_requires=dict(type='bool', default=False),
            check_root=dict(type='path'),
            check_kernel=dict(type='str'),
            source_date_epoch=dict(type='int'),
            executable=dict(type='path'),
        ),
        required_by=dict(check_kernel=['check_root']),
        supports_check_mode=True,
    )
    p = module.params
    inputs = p['src'] + p['firmware']
    for path in inputs:
        if not os.path.isfile(path):
            module.fail_json(msg='%s: no such file' % path)
    epoch = p['source_date_epoch']
    if epoch is None:
        epoch = max(int(os.stat(path).st_mtime) for path in inputs)
    built = os.path.join(module.tmpdir, 'dud.' + p['format'])
    args = ['dud', 'build', '--format', p['format'], '-o', built, '--release', p['release']]
    for option in ('name', 'version'):
        if p[option]:
            args += ['--' + option, p[option]]
    for path in p['firmware']:
        args += ['--firmware', path]
    if p['kabi_requires']:
        args.append('--kabi-requires')
    if p['check_root']:
        args += ['--check-root', p['check_root']]
    if p['check_kernel']:
        args += ['--check-kver', p['check_kernel']]
    args += p['src']
    rc, report, err = run_json(module, args, ok_codes=(0,),
                               environ=dict(SOURCE_DATE_EPOCH=str(epoch)))
    digest = module.sha256(built)
    same = os.path.isfile(p['dest']) and module.sha256(p['dest']) == digest
    if not same and not module.check_mode:
        module.atomic_move(built, p['dest'])
    module.exit_json(changed=not same, dest=p['dest'], sha256=digest, report=report)


if __name__ == '__main__':
    main()
