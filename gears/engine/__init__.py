"""The RedisGears programming model: the ``GearsBuilder`` DSL, plans, the step
operations, records, async steps, registrations, the API a script sees and the
in-process test host (:mod:`gears.engine.testing`). Shared by the worker process and
local tests."""
