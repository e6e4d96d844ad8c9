/**
 * Preloaded (`node --require`, through NODE_OPTIONS) into every Node process
 * and worker thread of a tracked run: installs the JS fd recorder
 * (src/fd-track.ts) before any user code runs.
 */
import { installJsTracking } from './fd-track';

installJsTracking();
