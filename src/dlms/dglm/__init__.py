"""Diffusion Guided Language Modeling (DGLM): a latent diffusion model proposes the sentence
embedding of a continuation, a soft prompt made from it steers an AR decoder, and linear
classifiers on the embedding space steer the proposals.

    from dlms.dglm import DglmTrainer, DglmPipeline, load_dglm_config
    DglmTrainer(load_dglm_config("configs/dglm/builtin.yaml")).run()       # embed, diffusion, decoder
    DglmPipeline.load("runs/dglm").generate("the steak", num_samples=5,
                                            control={"sentiment": "negative"}, guidance=10)

Where things live: the config (`config.py`); the foundational models (`encoder.py`,
`decoder_loading.py`, `check.py`); the semantic space (`embeddings.py`); data and pairs
(`data.py`, `pairs.py`); the latent diffusion model (`latent_diffusion.py`); the soft-prompted
decoder (`soft_prompt.py`); training (`train.py`, `stage_loop.py`, `stages.py`); control
(`control.py`, `train_classifier.py`); generation (`pipeline.py`); evaluation (`evaluate.py`,
`judges.py`); the `dlms dglm` commands (`cli.py`). File names from labels and output-path checks
are the project's (`dlms/paths.py`).
"""
from .config import DglmConfig, load_dglm_config
from .pipeline import DglmPipeline
from .train import DglmTrainer

__all__ = ["DglmConfig", "DglmPipeline", "DglmTrainer", "load_dglm_config"]
