"""Configuration: stage views of the one config tree, typed schemas with range checks, the sweeper."""
