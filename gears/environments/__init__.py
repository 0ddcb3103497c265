"""User environments: requirement sets installed per host, requirement packages, and the base environment every worker's user code gets."""
