"""What runs inside a job's SecretFlow processes: the job process (cold) or a session's driver
(warm), and the Ray workers and actors of its Ray job.

- `executor`: the cold job process, `python -m node.sfjob.executor` (one job, then teardown);
- `stages`: the one path of every job, cold or warm — cluster → devices → the job type's run —
  and `Federation`, how a job gets its cluster and devices;
- `pipe`: the child's end of its pipe to the task (node.launch.child_spec);
- `cluster`: sf.init in Ray production mode against this party's Ray head, and its shutdown;
- `devices`: the PYU and SPU devices of a job;
- `fedlink`: the cross-silo link's receiver, hardened (a peer's pickle checked by
  `pickle_check` before it is unpickled);
- `spu_runtime`: the SPU runtime actor (SecretFlow's, without SecretFlow or jax in the actor);
- `sflite`, `packages`: SecretFlow's device layer imported without its heavy parts;
- `rayworker`: what every Ray worker of a job runs first.

May import: node.contract, node.settings, node.heap, node.jobtypes (a job's run),
node.dataroot (its output), node.launch.child_spec (the pipe's contract). Nothing else of
node.launch, nothing of node.worker or node.sessions.
"""
