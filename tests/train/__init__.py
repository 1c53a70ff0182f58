"""Tests of medprobe train and medprobe zeroshot."""
