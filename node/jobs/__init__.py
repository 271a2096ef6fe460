"""Job types: each module declares its `JOB` (node.jobs.base.JobType); node.dispatcher lists
them."""
