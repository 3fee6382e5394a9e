"""Write ./x: a rank-4 LoRA with random factors (A and B both random, PEFT's
``init_lora_weights=False``, seed 0) on q_proj/v_proj of the model folder given as argv[1].

    python docs/examples/eval/make_x.py ~/.cache/adaptermath/models/smollm2-135m-instruct x
"""

import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

base, output = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(base)
config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
get_peft_model(model, config).save_pretrained(output)
