"""The compose simulation of a federation (docs/compose.md): images, generated config, stack."""
