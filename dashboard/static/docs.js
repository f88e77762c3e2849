// docs.js — a docs/ page is static text (rendered by the server); the module only
// keeps the header's connection state live, as on every page.
import { connect } from './ws.js';

connect();
