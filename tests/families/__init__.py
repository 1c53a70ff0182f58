"""Tests of the MLLM family adapters (medprobe_qwen_vl, medprobe_gemma3, medprobe_llava, medprobe_hulumed)."""
