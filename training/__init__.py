"""Fine-tuning on gold.sft: see the fine-tuning issue. No Spark on this path."""
