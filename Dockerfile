# Gears Fabric image: the `gears` command (gears node, cluster tools) and its engine.
FROM python:3.11-slim
WORKDIR /opt/gears-fabric
COPY setup.cfg pyproject.toml README.md ./
COPY gears ./gears
COPY readers ./readers
COPY cluster ./cluster
COPY pipelines ./pipelines
RUN pip install --no-cache-dir . && python -m gears.userenv
ENTRYPOINT ["gears"]
