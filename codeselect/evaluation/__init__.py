"""Evaluation on HumanEval+/MBPP+ through evalplus: benchmarks, generation, sandboxed scoring."""
