/**
 * Worker entry of one vCPU (see vcpu_thread.ts).
 *
 * @module
 */

import { installVcpuThread } from "./vcpu_thread.ts";

installVcpuThread();
