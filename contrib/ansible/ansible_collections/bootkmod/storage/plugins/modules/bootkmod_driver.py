#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bootkmod developers
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: bootkmod_driver
short_description: Keep a prebuilt storage driver in the boot path of every kernel
description:
  - Runs C(bootkmod install --json) or C(bootkmod remove --json) on the host, so a prebuilt
    (out-of-tree) kernel module is placed for its own kernel, linked into C(weak-updates/)
    of every kernel it is compatible with, indexed and injected into their initramfs images.
  - Each run first asks bootkmod for a dry run and compares it with C(bootkmod status), so
    the task is C(changed) only when a link, an index, an image or the ledger would change.
  - A root-critical driver that a kernel would refuse (another ABI, another flavour, a kABI
    break) fails the task with bootkmod's own message naming the kernel, before anything is
    written, unless I(allow_at_risk) is set.
  - The host needs only the bootkmod binary; I(src) can come from the controller
    (I(remote_src=false)).
version_added: "0.1.0"
author:
  - bootkmod developers (@bootkmod)
options:
  src:
    description:
      - The module file (C(.ko), C(.ko.xz), C(.ko.zst)) to install; a path on the host, or
        on the controller with I(remote_src=false).
      - Required when I(state=present).
    type: path
  remote_src:
    description:
      - C(true) when I(src) is on the host; C(false) to take it from the controller (a
        relative path is looked for in the role's or playbook's C(files/)). It is copied
        to the task's temporary directory on the host, in check mode too, and removed
        afterwards.
    type: bool
    default: true
  name:
    description:
      - Driver name (the module's name, e.g. C(mpt3sas)). Required when I(state=absent);
        with I(state=present) it is checked against the name bootkmod reads from I(src).
    type: str
  state:
    description:
      - C(present) installs I(src) as a build of its driver; C(absent) removes every build
        of driver I(name) and undoes its image changes.
    type: str
    choices: [present, absent]
    default: present
  root_critical:
    description:
      - The driver is needed to mount the root file system (C(--root-critical)); a kernel
        that refuses it is at risk of not booting, and the task fails naming that kernel.
    type: bool
    default: false
  regenerate:
    description:
      - Rebuild each image with the target's own dracut (C(--regenerate)) instead of
        injecting into the existing image. A regenerated image differs on every run, so
        the task reports C(changed) whenever an image needs the driver.
    type: bool
    default: false
  allow_at_risk:
    description:
      - Install even when a kernel would refuse the root-critical driver (that kernel is
        then reported in I(at_risk) and the task warns instead of failing).
    type: bool
    default: false
extends_documentation_fragment:
  - bootkmod.storage.bootkmod
attributes:
  check_mode:
    description: Runs bootkmod with C(--dry-run), which writes nothing.
    support: full
  diff_mode:
    description: Shows per kernel what the driver's placement and the image become.
    support: full
'''

EXAMPLES = r'''
- name: Put the new HBA driver into the boot path of every kernel
  bootkmod.storage.bootkmod_driver:
    src: /var/tmp/mpt3sas.ko
    root_critical: true

- name: The same, with the driver file from the controller's files/
  bootkmod.storage.bootkmod_driver:
    src: mpt3sas.ko
    remote_src: false
    root_critical: true

- name: The same for a target mounted by the installer
  bootkmod.storage.bootkmod_driver:
    src: /mnt/sysimage/var/tmp/mpt3sas.ko
    root: /mnt/sysimage
    root_critical: true

- name: Remove the driver again
  bootkmod.storage.bootkmod_driver:
    name: mpt3sas
    state: absent
'''

RETURN = r'''
name:
  description: The driver's name.
  returned: always
  type: str
  sample: mpt3sas
kernels:
  description:
    - Per kernel release, the driver's placement after the run (or the dry run), and
      whether its indexes and image change.
  returned: when state is present
  type: dict
  sample:
    6.1.0-57-amd64:
      placement: own
      depmod: true
      image_changed: true
      at_risk: []
changed_kernels:
  description: The kernels whose tree or image changed (or would change in check mode).
  returned: always
  type: list
  elements: str
at_risk:
  description: bootkmod's at-risk messages, each naming a kernel that would boot without
    a root-critical driver.
  returned: always
  type: list
  elements: str
report:
  description: bootkmod's own JSON report of the install or remove (dry run in check mode).
  returned: when bootkmod ran
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bootkmod.storage.plugins.module_utils.bootkmod import (
    COMMON_ARGS, run_json, status_by_kernel)


def describe_before(release, entry, name, images):
    """What a kernel holds of driver `name` now, as diff text."""
    lines = ['kernel %s' % release]
    if entry is None:
        lines.append('%s: not installed' % name)
    else:
        build = entry.get('build') or {}
        lines.append('%s: %s%s' % (name, entry.get('placement'),
                                   ' (build %s)' % build['sha256'][:16] if build else ''))
        lines.append('in image: %s' % ('yes' if entry.get('in_image') else 'no'))
    if images.get(release):
        lines.append('image %s' % images[release])
    return '\n'.join(lines) + '\n'


def describe_after_install(kernel, name):
    record = kernel.get('record', {})
    entry = record.get('modules', {}).get(name, {})
    lines = ['kernel %s' % kernel['release']]
    placement = entry.get('placement', 'none')
    where = entry.get('link') or entry.get('fallback') or ''
    build = entry.get('build')
    lines.append('%s: %s%s%s' % (name, placement, ' -> %s' % where if where else '',
                                 ' (build %s)' % build[:16] if build else ''))
    if placement == 'refused':
        lines.append('refused: %s' % '; '.join(entry.get('reasons', [])))
    if kernel.get('depmod'):
        lines.append('depmod: indexes rewritten')
    image = record.get('image') or {}
    if image:
        state = 'updated' if kernel.get('image_changed') else 'unchanged'
        if image.get('note'):
            state += ' (%s)' % image['note']
        lines.append('image %s: %s' % (image.get('path'), state))
    return '\n'.join(lines) + '\n'


def install_changes(report, before, name, root_critical, known_builds):
    """The kernels an install report changes (or would) compared with `status` before."""
    changed = []
    for kernel in report.get('kernels', []):
        release = kernel['release']
        entry = kernel.get('record', {}).get('modules', {}).get(name)
        was = before.get(release, {}).get(name)
        now = (entry or {}).get('placement'), (entry or {}).get('build')
        then = ((was or {}).get('placement'), ((was or {}).get('build') or {}).get('sha256'))
        if kernel.get('depmod') or kernel.get('image_changed') or now != then:
            changed.append(release)
        elif was is not None and bool(was.get('root_critical')) != root_critical:
            changed.append(release)
    # A new build is stored (and recorded) even where no kernel takes it.
    new_build = any(b['sha256'] not in known_builds
                    for d in report.get('installed', []) for b in d.get('builds', []))
    return changed, new_build


def present(module, before, status):
    p = module.params
    if not p['src']:
        module.fail_json(msg='src is required when state is present')
    args = ['install']
    if p['root_critical']:
        args.append('--root-critical')
    if p['regenerate']:
        args.append('--regenerate')
    args.append(p['src'])
    known_builds = set(b['sha256'] for b in status.get('builds', []))
    images = dict((k['release'], k.get('image')) for k in status.get('kernels', []))

    rc, plan, err = run_json(module, args[:1] + ['--dry-run'] + args[1:])
    drivers = plan.get('installed') or []
    name = drivers[0]['name'] if drivers else p['name']
    if p['name'] and name != p['name']:
        module.fail_json(msg='%s is driver %s, not %s' % (p['src'], name, p['name']))
    if plan.get('refused'):
        module.fail_json(msg='bootkmod refused, nothing changed: %s' % '; '.join(plan['refused']),
                         name=name, at_risk=[], changed_kernels=[], report=plan, stderr=err)
    # Only this driver's risks: another driver's are the facts module's business.
    at_risk = [r for k in plan.get('kernels', [])
               if (k.get('record', {}).get('modules', {}).get(name) or {}).get('placement') == 'refused'
               for r in k.get('at_risk', [])]
    if at_risk and not p['allow_at_risk']:
        module.fail_json(msg='; '.join(at_risk) + ' (nothing changed; allow_at_risk installs anyway)',
                         name=name, at_risk=at_risk, changed_kernels=[], stderr=err)

    changed_kernels, new_build = install_changes(plan, before, name, p['root_critical'], known_builds)
    # A regenerated image is rebuilt whenever it needs the driver.
    changed = bool(changed_kernels) or new_build or p['regenerate']
    report = plan
    if changed and not module.check_mode:
        rc, report, err = run_json(module, args)
        failures = ['kernel %s not completed: %s (fix it, then run bootkmod install --refresh --kver %s)'
                    % (k['release'], k['failure'], k['release'])
                    for k in report.get('kernels', []) if k.get('failure')]
        if failures:
            module.fail_json(msg='; '.join(failures), name=name, report=report, stderr=err,
                             changed=True)
        changed_kernels, new_build = install_changes(report, before, name, p['root_critical'],
                                                     known_builds)
        changed = bool(changed_kernels) or new_build or p['regenerate']
    for risk in at_risk:
        module.warn(risk)
    result = dict(
        changed=changed, name=name, at_risk=at_risk, changed_kernels=changed_kernels, report=report,
        kernels=dict((k['release'], dict(
            placement=(k.get('record', {}).get('modules', {}).get(name) or {}).get('placement'),
            depmod=bool(k.get('depmod')), image_changed=bool(k.get('image_changed')),
            at_risk=k.get('at_risk', []))) for k in report.get('kernels', [])),
    )
    if module._diff:
        result['diff'] = [dict(
            before_header='%s (before)' % k['release'], after_header='%s (after)' % k['release'],
            before=describe_before(k['release'], before.get(k['release'], {}).get(name), name, images),
            after=describe_after_install(k, name),
        ) for k in report.get('kernels', []) if k['release'] in changed_kernels]
    module.exit_json(**result)


def absent(module, before, status):
    name = module.params['name']
    if not name:
        module.fail_json(msg='name is required when state is absent')
    images = dict((k['release'], k.get('image')) for k in status.get('kernels', []))
    holding = sorted(r for r, mods in before.items() if name in mods)
    installed = holding or any(b.get('name') == name for b in status.get('builds', []))
    if not installed:
        module.exit_json(changed=False, name=name, at_risk=[], changed_kernels=[])
    args = ['remove', name]
    if module.check_mode:
        args = ['remove', '--dry-run', name]
    rc, report, err = run_json(module, args, ok_codes=(0,))
    result = dict(changed=True, name=name, at_risk=[], changed_kernels=holding, report=report)
    if module._diff:
        restored = set(report.get('restored', []))
        result['diff'] = [dict(
            before_header='%s (before)' % r, after_header='%s (after)' % r,
            before=describe_before(r, before[r][name], name, images),
            after='kernel %s\n%s: not installed\n%s' % (
                r, name, 'image %s: restored\n' % images[r] if images.get(r) in restored else ''),
        ) for r in holding]
    module.exit_json(**result)


def main():
    argument_spec = dict(
        src=dict(type='path'),
        remote_src=dict(type='bool', default=True),
        name=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        root_critical=dict(type='bool', default=False),
        regenerate=dict(type='bool', default=False),
        allow_at_risk=dict(type='bool', default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[('state', 'present', ['src']), ('state', 'absent', ['name'])],
        supports_check_mode=True,
    )
    rc, status, err = run_json(module, ['status'])
    before = status_by_kernel(status)
    if module.params['state'] == 'present':
        present(module, before, status)
    else:
        absent(module, before, status)


if __name__ == '__main__':
    main()
