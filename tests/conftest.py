import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow (used by seqio's data pipeline) off the accelerator JAX may want.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
