"""Tasks over models and datasets: classify, zero-shot, train, finetune, and the probe/report pipeline."""
