"""What a chip pays per token: a cost model of its operations (`ChipCost`, with presets), the work one token asks of
it (`token_usage`, from the routing a run measured) and the bill (`price`): energy and latency per token, beside the
same model all digital."""

from romer.cost.bill import Bill, price
from romer.cost.model import ChipCost
from romer.cost.presets import (DEFAULT_CHIP_COST, chip_cost_names, get_chip_cost, load_chip_cost,
                                register_builtin_chip_costs, register_chip_cost)
from romer.cost.usage import MatrixUse, Usage, token_usage

register_builtin_chip_costs()

__all__ = ["Bill", "ChipCost", "DEFAULT_CHIP_COST", "MatrixUse", "Usage", "chip_cost_names", "get_chip_cost",
           "load_chip_cost", "price", "register_chip_cost", "token_usage"]
