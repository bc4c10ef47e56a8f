// The documents in a category, by the share of their chunks classified into it.
// Parameters: $category (a category label, e.g. 'Science').
//   :param category => 'Science'
MATCH (d:Document)-[r:IN_CATEGORY]->(k:Category)
WHERE toLower(k.name) = toLower($category)
RETURN k.name AS category, d.path AS document, d.title AS title, r.share AS share
ORDER BY share DESC, document
