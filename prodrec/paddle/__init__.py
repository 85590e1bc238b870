"""PaddleClas at the edge: .pdparams weights and PaddleClas YAML configs translated into prodrec's own."""
from prodrec.paddle.reader import (Notes, Section, parse_number)
from prodrec.paddle.weights import (PaddleWeightsError, load_pdparams, convert_paddle_state, load_paddleclas,
                                    embedder_from_paddleclas)
from prodrec.paddle.recipe import (translate_arch, translate_losses, translate_optimizer, translate_metrics,
                                   backbone_mean_std, PADDLECLAS_WEIGHTS_HOME)
from prodrec.paddle.data import (translate_dataloader, PRODREC_ERASING)
from prodrec.paddle.config import (is_ppcls_config, read_ppcls_yaml, apply_ppcls_overrides, translate_ppcls_config,
                                   load_ppcls_config, convert_paddle_pretrained, native_yaml)

__all__ = ["Notes", "Section", "parse_number", "PaddleWeightsError", "load_pdparams", "convert_paddle_state",
           "load_paddleclas", "embedder_from_paddleclas", "translate_arch", "translate_losses", "translate_optimizer",
           "translate_metrics", "backbone_mean_std", "PADDLECLAS_WEIGHTS_HOME", "translate_dataloader",
           "PRODREC_ERASING", "is_ppcls_config", "read_ppcls_yaml", "apply_ppcls_overrides", "translate_ppcls_config",
           "load_ppcls_config", "convert_paddle_pretrained", "native_yaml"]
