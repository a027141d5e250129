#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: bootkmod developers
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: bootkmod_facts
short_description: Per kernel driver compatibility, placement and at-risk banners as host facts
description:
  - Runs C(bootkmod status --json) on the host and sets the fact C(bootkmod) a playbook can
    branch on, in particular C(bootkmod.at_risk) and C(bootkmod.kernels_at_risk).
  - When the host's bootkmod has a C(doctor) command (C(bootkmod doctor --help) succeeds),
    its C(--json) report is added as C(bootkmod.doctor); with an older bootkmod that key is
    null and nothing fails. Where doctor cannot judge (no chain readable under the root,
    no kernels), the key holds the verdict C(status) folded in, else C(error) with
    doctor's message; the task still succeeds.
  - Reads only; never changes the host.
version_added: "0.1.0"
author:
  - bootkmod developers (@bootkmod)
options:
  kernel:
    description:
      - Only this kernel release (C(--kver)); by default every kernel under I(root).
    type: str
extends_documentation_fragment:
  - bootkmod.storage.bootkmod
attributes:
  check_mode:
    description: Reads only, in check mode as otherwise.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to show.
    support: none
  facts:
    description: Sets the C(bootkmod) fact.
    support: full
'''

EXAMPLES = r'''
- name: Read what bootkmod keeps on each host
  bootkmod.storage.bootkmod_facts:

- name: List the hosts that would boot a kernel without their root driver
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ bootkmod.kernels_at_risk | join(', ') }}"
  when: bootkmod.at_risk

- name: Before a kernel update, check the new kernel only
  bootkmod.storage.bootkmod_facts:
    kernel: 6.1.0-58-amd64
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    bootkmod:
      description:
        - C(at_risk) (bool), C(alerts) (list), C(kernels) (dict by release, each with
          C(image), C(image_unchanged), C(modules) by driver name with C(compatible),
          C(placement), C(placed), C(in_image), C(root_critical), C(reasons), and
          C(at_risk)), C(kernels_at_risk) (list of releases), C(builds) (list),
          C(doctor) (the doctor report, C(error), or null), C(root).
      returned: always
      type: dict
      sample:
        at_risk: true
        kernels_at_risk: [6.1.0-57-rt-amd64]
        kernels:
          6.1.0-57-rt-amd64:
            image_unchanged: true
            modules:
              mpt3sas:
                compatible: false
                placement: refused
            at_risk:
              - kernel 6.1.0-57-rt-amd64 would boot without root-critical driver mpt3sas
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.bootkmod.storage.plugins.module_utils.bootkmod import (
    COMMON_ARGS, bootkmod_bin, bootkmod_message, run_json)


def has_doctor(module):
    """bootkmod doctor exists in this build (it is newer than status)."""
    rc, out, err = module.run_command([bootkmod_bin(module), 'doctor', '--help'])
    return rc == 0


def main():
    argument_spec = dict(kernel=dict(type='str'))
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    args = ['status']
    if module.params['kernel']:
        args += ['--kver', module.params['kernel']]
    rc, status, err = run_json(module, args)
    kernels = {}
    for k in status.get('kernels', []):
        entry = dict(k)
        entry['modules'] = dict((m['name'], m) for m in k.get('modules', []))
        kernels[k['release']] = entry
    doctor = None
    if has_doctor(module):
        # doctor exits 3 when a kernel is at risk: a finding, not a failure. Where it
        # cannot judge (no chain readable, no kernels), its error is a fact too, and the
        # verdict status folded in stands: doctor never costs the host its status facts.
        rc, doctor, err = run_json(module, ['doctor'], ok_codes=(0, 1, 3), fail=False)
        if rc == 1:
            doctor = status.get('doctor') or dict(error=bootkmod_message(err))
    facts = dict(
        root=module.params['root'],
        at_risk=bool(status.get('at_risk')),
        alerts=status.get('alerts', []),
        kernels=kernels,
        kernels_at_risk=sorted(r for r, k in kernels.items() if k.get('at_risk')),
        builds=status.get('builds', []),
        doctor=doctor,
    )
    module.exit_json(changed=False, ansible_facts=dict(bootkmod=facts))


if __name__ == '__main__':
    main()
