"""Job types; each module registers itself with node.dispatcher."""
