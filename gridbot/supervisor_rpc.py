"""supervisord's RPC interface, letting a bare program name stand for that program inside its group.

The programs live in ``[group:gridbot]``, so supervisord names them ``gridbot:executor``; stock supervisorctl then
answers ``restart executor`` with "no such process" (a bare name means group ``executor``, program ``executor``).
This interface resolves a bare name that is no group but exactly one program's name to that program, for every
verb that names a process (start, stop, restart, signal, tail, ...). Everything else is supervisord's own
interface, unchanged. Configured in deploy/supervisord.conf under ``[rpcinterface:supervisor]``.
"""

from __future__ import annotations

from typing import Any

from supervisor.options import split_namespec
from supervisor.rpcinterface import SupervisorNamespaceRPCInterface


class GroupAliasRPCInterface(SupervisorNamespaceRPCInterface):  # type: ignore[misc]
    def _getGroupAndProcess(self, name: str) -> Any:
        group_name, process_name = split_namespec(name)
        groups = self.supervisord.process_groups
        if group_name not in groups and process_name == group_name:
            matches = [
                (group, process)
                for group in groups.values()
                for process in group.processes.values()
                if process.config.name == name
            ]
            if len(matches) == 1:
                return matches[0]
        return super()._getGroupAndProcess(name)


def make_rpcinterface(supervisord: Any) -> GroupAliasRPCInterface:
    return GroupAliasRPCInterface(supervisord)
