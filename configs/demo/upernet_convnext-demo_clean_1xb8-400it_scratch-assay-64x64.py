# Demo model trained clean. `make demo` trains it and evaluates it with
#   python tools/test.py THIS_CONFIG CKPT --eval sea --eps 1 2 4 8
_base_ = ['./_base_demo.py']
