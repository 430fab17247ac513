"""The CTDE diffusion planner (torch).

    config.PlannerConfig      what the planner sees and generates, and the network size
    features                  ego-centric query tensors (NumPy), shared by training data and execution
    data                      `drivediff collect`: expert traffic -> training windows (shards)
    denoiser.Denoiser         forward(x_t, t, cond) -> x0; a transformer over agent and lane tokens
    schedulers                DDPM, DDIM, DPM-Solver++
    dynamics                  differentiable bicycle rollout
    sampler                   the sampling loop, inpainting, candidate selection
    train                     `drivediff train`
    checkpoint                save / load (weights_only=True)
"""
