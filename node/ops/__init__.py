"""What an operator runs and reads on a party's host.

- `health`: the node's checks (`python -m node health`, the `health` task), and what a party
  shows of its data root;
- `probe`: the standing mTLS probe — are the links between parties up before a job;
- `metrics`: the node's Prometheus exporter (`python -m node metrics`);
- `supervise`: one supervisor for a party's long-running processes (`python -m node up`);
- `refusals`: the count of task messages the node dropped (written by the worker, read by health).

May import: node.contract, node.settings, node.rayhead, node.dataroot, node.jobtypes (the job
types it names). Never node.worker: the worker imports from here (its `health` task, the
refusal count), and node.__main__.
"""
