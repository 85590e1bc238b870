"""Training: train_metric, the one step loop for any TrainingTask, the LR schedule, checkpoints, run safety (lock, signals) and
torch.distributed."""
from prodrec.train.optim import (build_optimizer, build_scheduler, scale_schedule, ScheduleLength)
from prodrec.train.checkpoint import (CHECKPOINT_FORMAT, CheckpointWriteError, save_checkpoint, load_checkpoint,
                                      load_latest_checkpoint, previous_path, remove_checkpoint_temporaries)
from prodrec.train.safety import (RunLock, StopSignals, NonFiniteError, TrainingInterrupted, all_finite)
from prodrec.train.state import (rng_state, set_rng_state, seed_rank, data_order, check_data_order)
from prodrec.train.distributed import (LaunchEnv, read_launch_env, DistributedContext, init_distributed)
from prodrec.train.ddp import (EmbedderWithLoss, CrossRankMinedLoss, cross_rank_loss, wrap_for_training, unwrap,
                               broadcast_buffers, ShardedSearch, evaluate_sharded)
from prodrec.train.task import (TrainingTask, MetricTask, build_model, head_classes)
from prodrec.train.loop import (resolve_device, loader_workers, TrainingRun)
from prodrec.train.run import (train_metric, run_task, TrainResult)

__all__ = ["build_optimizer", "build_scheduler", "scale_schedule", "ScheduleLength", "CHECKPOINT_FORMAT",
           "CheckpointWriteError", "save_checkpoint", "load_checkpoint", "load_latest_checkpoint", "previous_path",
           "remove_checkpoint_temporaries", "RunLock", "StopSignals", "NonFiniteError", "TrainingInterrupted",
           "all_finite", "rng_state", "set_rng_state", "seed_rank", "data_order", "check_data_order", "LaunchEnv",
           "read_launch_env", "DistributedContext", "init_distributed", "EmbedderWithLoss", "CrossRankMinedLoss",
           "cross_rank_loss", "wrap_for_training", "unwrap", "broadcast_buffers", "ShardedSearch", "evaluate_sharded", "resolve_device",
           "TrainingTask", "MetricTask", "build_model", "head_classes", "loader_workers", "TrainingRun", "train_metric",
           "run_task", "TrainResult"]
