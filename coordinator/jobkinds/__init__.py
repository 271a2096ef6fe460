"""The kinds of job the coordinator launches: each module declares one `KIND` (a
`spec.JobKind`) — its request model (the API's body and the UI's form), the parties it names,
and the task_config every party gets; `table` lists them. A kind is the coordinator's side of
one of the nodes' job types (node/jobtypes/, the same name as its task_type).

May import: node.contract, coordinator.schemas. Nothing of coordinator.services or api.
"""
