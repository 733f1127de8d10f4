// ES module entry of the Telebridge browser client: the code lives in telebridge.js (which
// also works as a classic script defining window.Telebridge); importing it here runs it once.
//
//   import { connect } from "/static/telebridge.esm.js";
//   const client = await connect("/ws", token, { name: "Dr. An", autoSubscribe: true });
import "./telebridge.js";

const Telebridge = globalThis.Telebridge;
export default Telebridge;
export const {
  PROTOCOL_VERSION,
  SOURCES,
  Client,
  TelebridgeError,
  connect,
  parseSections,
  offeredTracks,
  waitForGathering,
  resolveUrl,
} = Telebridge;
