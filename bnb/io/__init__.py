"""Problem in: ONNX networks and VNN-LIB 1.0/2.0 properties read into the engine's objects, the loaded-model cache, and
counterexamples replayed on the original model."""
