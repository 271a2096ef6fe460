"""What an operator runs and reads on a party's host.

- `health`: the node's checks (`python -m node health`, the `health` task), and what a party
  shows of its data root;
- `probe`: the standing mTLS probe — are the links between parties up before a job;
- `metrics`: the node's Prometheus exporter (`python -m node metrics`);
- `supervise`: one supervisor for a party's long-running processes (`python -m node up`).

May import: node.contract, node.settings, node.rayhead, node.dataroot, node.jobtypes (the job
types it names), node.worker (replay counts, logs). Nothing imports from here but
node.__main__ and the worker's `health` task.
"""
