"""Starting and watching a job's child process, from the Celery task's side.

- `jobprocess`: a child `python -m …` with its message pipe (`JobProcess`), and the spare one
  kept pre-started;
- `runner`: supervises one job's child to an `Outcome` (start timeout, time limit, deadline,
  cancel, the Ray head);
- `failures`: turns a job's ending and its log into one typed cause and one readable line.

May import: node.contract, node.settings, node.rayhead.head, node.dataroot (scratch folder),
node.worker.housekeeping (rotated logs). Not node.sessions, not node.sfjob.
"""
