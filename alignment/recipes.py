"""Moved to alignment.pipeline.recipes; this name stays only while alignment.train_dpo imports stage_defaults from
here (remove it once train_dpo imports alignment.pipeline.recipes)."""
from alignment.pipeline.recipes import STAGES, check_section, config_path, load_yaml, stage_defaults

__all__ = ["STAGES", "check_section", "config_path", "load_yaml", "stage_defaults"]
