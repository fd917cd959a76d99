// CPU reference of SoRA's proximal step: the official code's three in-place lines (and the soft
// threshold) as torch expressions; they run on any device.
#include "kernels/kernels.h"

namespace spartan::kernels::cpu {

void sora_threshold_(torch::Tensor& g, double t, GateThresholdForm form) {
  torch::NoGradGuard no_grad;
  if (form == GateThresholdForm::official) {
    g.copy_(torch::where(g.gt(t), g - t, g));
    g.copy_(torch::where(g.lt(-t), g + t, g));
    g.masked_fill_(g.abs().lt(t), 0.0);
    return;
  }
  g.copy_(g.sign() * (g.abs() - t).clamp_min(0.0));
}

}  // namespace spartan::kernels::cpu
