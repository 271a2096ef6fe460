"""The Celery worker side of a node: what runs in `python -m node worker` and its pool.

- `celery_app`: the app (queues, routes, limits), the worker's steps (heartbeat, session host);
- `tasks`: the Celery tasks: `execute_task` takes a job from its message to its result, `hello`,
  `health`, `list_datasets`;
- `replay`: each task message runs once (a replay is counted in node.ops.refusals); `signing`: whose signatures the worker accepts;
- `notifier`: every status event of a task, into this party's own Redis (stream + channel);
- `housekeeping`: what the node removes so that nothing grows without end.

May import: node.contract, node.settings, node.jobtypes, node.dataroot, node.launch,
node.sessions, node.ops, node.rayhead (is the head up), node.heap. Nothing below imports from
here.
"""
