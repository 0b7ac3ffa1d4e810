"""Managing a local IC network with the tools people have installed (`dfx`, or the newer
`icp` CLI): find them, start/stop the network, check it, deploy gpt2_backend. No UI code."""

from gpt2_chat.replica.tools import (
    COMMAND_LOG,
    CommandFailed,
    CommandLog,
    CommandRecord,
    ReplicaStatus,
    ReplicaToolError,
    ReplicaToolMissing,
    ReplicaTools,
    ToolInfo,
    find_tools,
    probe_replica,
    run_command,
)

__all__ = [
    "COMMAND_LOG",
    "CommandFailed",
    "CommandLog",
    "CommandRecord",
    "ReplicaStatus",
    "ReplicaToolError",
    "ReplicaToolMissing",
    "ReplicaTools",
    "ToolInfo",
    "find_tools",
    "probe_replica",
    "run_command",
]
