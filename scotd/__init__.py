"""scotd: Symbolic Chain-of-Thought Distillation on Ray.

Importing the package is cheap on purpose: vLLM, DeepSpeed and Ray Train are imported inside the stages that use them.
"""

__version__ = "0.1.0"
