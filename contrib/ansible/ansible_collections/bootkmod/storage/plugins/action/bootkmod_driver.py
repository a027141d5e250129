# -*- coding: utf-8 -*-
# Copyright: bootkmod developers
# SPDX-License-Identifier: MIT OR Apache-2.0
"""bootkmod_driver with remote_src=false: the module file is on the controller. It goes
to the task's temporary directory on the host (removed afterwards), in check mode too,
so the dry run reads the very file a real run would install; nothing else on the host
is written for it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):

    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = self._task.args.copy()
        try:
            if boolean(args.get('remote_src', True), strict=False) or not args.get('src'):
                result.update(self._execute_module(
                    module_name='bootkmod.storage.bootkmod_driver', module_args=args, task_vars=task_vars))
                return result
            source = self._find_needle('files', args['src'])
            if not self._connection._shell.tmpdir:
                self._make_tmp_path()
            # The file's own name: bootkmod records it as the build's origin.
            remote = self._connection._shell.join_path(
                self._connection._shell.tmpdir, source.replace('\\', '/').rsplit('/', 1)[-1])
            self._transfer_file(source, remote)
            self._fixup_perms2((self._connection._shell.tmpdir, remote))
            args['src'] = remote
            result.update(self._execute_module(
                module_name='bootkmod.storage.bootkmod_driver', module_args=args, task_vars=task_vars))
            return result
        except AnsibleActionFail as e:
            result.update(e.result)
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
