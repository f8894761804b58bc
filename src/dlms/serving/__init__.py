"""Serving: `dlms serve` puts trained runs behind an HTTP API with a live page of the denoising.

    from dlms.serving import create_app, load_engine
    app = create_app({"masked": load_engine("masked", "runs/demo-masked")})

The parts: schema.py (the request JSON, limits), engines.py (a model behind the server),
batcher.py (the bounded queue and the sampling worker), frames.py (a step of the canvas as
JSON), app.py (the routes), static/ (the page).
"""
from .app import create_app
from .engines import DglmEngine, ModelEngine, load_engine
from .schema import GenerateBody, ServeLimits

__all__ = ["create_app", "load_engine", "ModelEngine", "DglmEngine", "GenerateBody", "ServeLimits"]
