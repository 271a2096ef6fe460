"""This party's Ray head: the one Ray cluster its jobs run on.

- `head`: start, stop, status and `is_up` of the head (`python -m node ray-head …`), and the
  Ray session a warm session's driver connected to;
- `supervisor`: the process that stands for the head, `python -m node.rayhead.supervisor RAY
  START COMMAND…` (the standard library only);
- `hook`: what `ray start` runs before it starts anything (no API server, our agent);
- `agent`: what the raylet runs as its dashboard agent (the standard library only).

May import: node.settings, node.dataroot.paths (`head` only, for the scratch folder:
`supervisor`, `hook` and `agent` run in small processes of their own and import nothing of
node).
"""
