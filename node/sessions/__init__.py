"""Warm federation sessions (docs/architecture.md, "Warm sessions").

- `driver`: the session's driver process (sf.init and the SPU device once, then job after job);
- `host`: the process that owns the drivers and hands them jobs (`python -m node.sessions.host`);
- `registry`: the host's record of each session, and the ids of those it started;
- `wire`: the host's side of its socket's line protocol;
- `client`: what a Celery task uses to run its job in a session;
- `paths`: where the host listens;
- `service`: the host as a child of the SecretFlow worker; `cli`: `python -m node sessions`.

May import: node.contract, node.settings, node.rayhead, node.launch (the child's contract, its
process, the port check), node.sfjob (the driver's stages), node.logfiles (the host's log). The
worker imports `client`.
"""
