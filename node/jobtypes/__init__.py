"""The job types a node runs: each module declares one `JOB` (a `spec.JobType`); `table` lists
them by task_type.

- `spec`: what a job type is — its typed `Prepared` model, its checks before any SecretFlow work
  (`prepare`, in the Celery task), its run inside SecretFlow (`run`, in the job's process, cold
  or warm) — and the refusal its checks raise;
- `table`: task_type → job type (nothing registers itself on import);
- `psi`: two-party PSI.

May import: node.contract, node.settings, node.dataroot. A job type's module imports nothing of
`table` (the table imports the job types).
"""
