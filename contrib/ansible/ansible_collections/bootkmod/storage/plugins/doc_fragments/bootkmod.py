# -*- coding: utf-8 -*-
# The options every bootkmod module takes, documented once.
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):

    # Where bootkmod runs and on what root (module_utils/bootkmod.py COMMON_ARGS).
    DOCUMENTATION = r'''
options:
  root:
    description:
      - The target root bootkmod works on (C(--root)), e.g. C(/mnt/sysimage).
    type: path
    default: /
  executable:
    description:
      - Path of the bootkmod binary where the module runs; by default it is looked up on
        C(PATH).
    type: path
'''

    # Only the binary (bootkmod_dud runs on the controller and has no root).
    EXECUTABLE = r'''
options:
  executable:
    description:
      - Path of the bootkmod binary where the module runs; by default it is looked up on
        C(PATH).
    type: path
'''
