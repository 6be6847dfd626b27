"""Command-line gin flags of a tiny `python -m slt.train` run on the demo corpus, shared by
the tests that start real training jobs in subprocesses (a 1-layer, 32-wide model: a
step takes milliseconds, so the tests spend their time on what they check)."""

TINY_TRAIN_FLAGS = [
    "--gin_file=runs/demo.gin",
    "--gin.slt.T5Config.emb_dim=32",
    "--gin.slt.T5Config.head_dim=8",
    "--gin.slt.T5Config.num_heads=2",
    "--gin.slt.T5Config.mlp_dim=64",
    "--gin.slt.T5Config.num_encoder_layers=1",
    "--gin.slt.T5Config.num_decoder_layers=1",
    "--gin.slt.OptimizerConfig.warmup_steps=2",
    "--gin.train.batch_size=8",
    "--gin.train.log_period=1",
]
