'use strict';
// Bench fixture: does nothing and keeps running (a timer keeps the loop alive).
setInterval(() => {}, 60 * 60 * 1000);
console.log(`idle pid=${process.pid}`);
