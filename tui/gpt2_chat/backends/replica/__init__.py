"""The replica backend: a canister on a real IC network over its HTTP interface.

It is given a replica URL (or network name: `gpt2_chat.network`) and a canister id
(`gpt2_chat.canister_ids`). Modules: `envelopes` (signed requests), `transport` (HTTP under
one deadline), `certificate` (certificate verification), `query_signatures` (node
signatures on query replies), `rejects` and `failures` (reject codes and transport failures
as the typed errors of `errors`), `backend` (queries, calls, polling).
"""

from gpt2_chat.backends.replica.backend import ReplicaBackend

__all__ = ["ReplicaBackend"]
