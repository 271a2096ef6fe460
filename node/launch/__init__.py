"""Starting and watching a job's child process, from the Celery task's side.

- `child_spec`: the contract between a task and the child that runs its job — the typed job
  spec sent to it, the typed messages it sends back, and `JobChild`, what a handle on a running
  job's child does (a cold job process and a job in a warm session both are one);
- `jobprocess`: a child `python -m …` with its message pipe (`JobProcess`), and the spare one
  kept pre-started;
- `runner`: supervises one job's child to an `Outcome` (start timeout, time limit, deadline,
  cancel, the Ray head);
- `failures`: turns a job's ending and its log into one typed cause and one readable line.

May import: node.contract, node.settings, node.rayhead.head, node.dataroot (scratch folder),
node.logfiles (rotated logs). Not node.worker, node.sessions or node.sfjob.
"""
