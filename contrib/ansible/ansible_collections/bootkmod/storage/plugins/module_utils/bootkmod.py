# -*- coding: utf-8 -*-
# Copyright: bootkmod developers
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Running the bootkmod binary for the collection's modules: one place that builds the
command line (global --root and --json first), parses its JSON report and turns its
exit codes (0 ok, 1 error, 2 usage, 3 checked and found negative) into results."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

# Options every module shares: where bootkmod is, which tree it works on.
COMMON_ARGS = dict(
    root=dict(type='path', default='/'),
    executable=dict(type='path'),
)


def bootkmod_bin(module):
    """The bootkmod binary: the executable option, else PATH (and /sbin, /usr/sbin)."""
    if module.params.get('executable'):
        return module.params['executable']
    return module.get_bin_path('bootkmod', required=True)


def run_json(module, args, ok_codes=(0, 3), environ=None, fail=True):
    """Run `bootkmod --root ROOT --json ARGS` (no --root for a module without that option),
    with `environ` added to its environment; returns (rc, report, stderr).

    An exit code outside ok_codes, or a report that is not JSON, fails the module with
    bootkmod's own message (its stderr), which names the file or kernel concerned; with
    fail=False a report that is not JSON comes back as {}."""
    cmd = [bootkmod_bin(module)]
    if 'root' in module.params:
        cmd += ['--root', module.params['root']]
    cmd += ['--json'] + list(args)
    rc, out, err = module.run_command(cmd, environ_update=environ or {})
    if rc not in ok_codes:
        module.fail_json(msg=bootkmod_message(err) or 'bootkmod exited %d' % rc,
                         rc=rc, cmd=cmd, stdout=out, stderr=err)
    try:
        report = json.loads(out) if out.strip() else {}
    except ValueError as e:
        if not fail:
            return rc, {}, err
        module.fail_json(msg='bootkmod printed no JSON report: %s' % e,
                         rc=rc, cmd=cmd, stdout=out, stderr=err)
    return rc, report, err


def bootkmod_message(stderr):
    """bootkmod's own error lines (`bootkmod: ...`), without its tracing log."""
    lines = [line for line in stderr.splitlines() if line.startswith('bootkmod: ')]
    return '\n'.join(lines) if lines else stderr.strip()


def status_by_kernel(report):
    """`status --json` as {release: {driver name: module entry}}."""
    return dict(
        (k['release'], dict((m['name'], m) for m in k.get('modules', [])))
        for k in report.get('kernels', [])
    )
