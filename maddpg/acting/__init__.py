"""Acting without TensorFlow: policy heads that turn an actor's output into actions (numpy only), shared by the
learner's inference, the explorers and `evaluate`."""
