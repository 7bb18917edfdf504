print("edge-finetune")
