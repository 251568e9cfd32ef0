"""Training: Lightning multi-task training of NeuralTrees, and causal-LM fine-tuning of registry models."""
