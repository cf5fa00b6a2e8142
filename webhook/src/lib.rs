//! faultline-webhook: injection webhook, certificates and policy controller.
