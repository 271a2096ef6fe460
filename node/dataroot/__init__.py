"""A party's data root: the only folder a job reads from or writes to.

- `paths`: dataset names → paths inside the root (every way out refused), output claims and the
  output's fixed folder (`OutputTarget`), the scratch folder;
- `tables`: the streaming check of an input table (encoding, shape, quoting, empty keys,
  duplicates) and its key-only copy; `table_arrow`: its fast path for plain tables;
- `output`: a job's output made of the party's own rows, written `.partial` then renamed.

May import: node.contract, node.settings. Runs in the Celery task (checks) and in the job's
process (output).
"""
