"""Layer 5, quantization: GPTQ (pure matrix functions), the block walk, references,
rotation, tuned rounding, distillation, the `Recipe` a variant is made from, and `Variant`."""
