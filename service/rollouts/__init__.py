"""Safe rollouts: a candidate version takes over ``name@alias`` step by step, judged on live traffic."""
